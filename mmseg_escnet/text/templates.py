"""Prompt templates for turning class names into CLIP text prompts.

A template is a ``str.format`` pattern with exactly one ``'{}'`` slot for the
class name, e.g. ``'A photo of a {} in the scene'``.

Named template sets:

* ``'catseg'``: the single template used by both released CAT-Seg configs
  (``PROMPT_ENSEMBLE_TYPE: "single"``), so the number of templates ``P`` is 1.
* ``'imagenet'``: the 80 OpenAI ImageNet templates, taken from
  ``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``.
* ``'vild'``: the 14 ViLD templates shipped with MMSegmentation
  (``mmseg.utils.get_predefined_templates('vild')``, the set SAN uses). Note that
  CAT-Seg's unused ``ViLD_templates`` list is a different, 63-entry list.
"""
from typing import Callable, Dict, List, Sequence, Union

CATSEG_TEMPLATES: List[str] = ['A photo of a {} in the scene']

_SLOT = '{}'


def _imagenet_templates() -> List[str]:
    """The 80 OpenAI ImageNet templates, converted from open_clip's lambdas."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    # open_clip stores `lambda c: f'...{c}...'`; calling it with the slot text
    # turns each one back into a format string.
    return [fn(_SLOT) for fn in OPENAI_IMAGENET_TEMPLATES]


def _vild_templates() -> List[str]:
    """The ViLD templates as shipped by MMSegmentation."""
    from mmseg.utils import get_predefined_templates

    return list(get_predefined_templates('vild'))


_TEMPLATE_SETS: Dict[str, Callable[[], List[str]]] = {
    'catseg': lambda: list(CATSEG_TEMPLATES),
    'imagenet': _imagenet_templates,
    'vild': _vild_templates,
}


def available_template_sets() -> List[str]:
    """Names accepted by :func:`get_templates`.

    Returns:
        List[str]: sorted names of the built-in template sets.
    """
    return sorted(_TEMPLATE_SETS)


def check_template(template: str, index: int = 0) -> str:
    """Validate one template.

    Args:
        template (str): a format string with exactly one ``'{}'`` slot.
        index (int): its position in the template list, used in error messages.

    Returns:
        str: the template unchanged.

    Raises:
        TypeError: if ``template`` is not a string.
        ValueError: if it does not contain exactly one ``'{}'`` or does not
            format (e.g. a stray ``'{'``).
    """
    if not isinstance(template, str):
        raise TypeError(f'template {index} must be a str, got {type(template).__name__}: '
                        f'{template!r}')
    n_slots = template.count(_SLOT)
    if n_slots != 1:
        raise ValueError(f"template {index} {template!r} must contain exactly one '{{}}' slot "
                         f'for the class name, found {n_slots}')
    try:
        template.format('x')
    except (IndexError, KeyError, ValueError) as err:
        raise ValueError(f'template {index} {template!r} is not a valid format string: '
                         f'{err}') from err
    return template


def get_templates(templates: Union[str, Sequence[str]]) -> List[str]:
    """Resolve a template-set name or a list of templates.

    Args:
        templates (str | Sequence[str]): a built-in set name (see
            :func:`available_template_sets`) or a non-empty sequence of format
            strings, each with exactly one ``'{}'``.

    Returns:
        List[str]: the templates, in order (P entries).

    Raises:
        ValueError: unknown set name, empty list or a malformed template.
        TypeError: ``templates`` is neither a str nor a sequence of str.
    """
    if isinstance(templates, str):
        if templates not in _TEMPLATE_SETS:
            raise ValueError(f'unknown template set {templates!r}; available: '
                             f'{available_template_sets()} (or pass a list of format strings '
                             f"containing '{{}}')")
        resolved = _TEMPLATE_SETS[templates]()
    elif isinstance(templates, Sequence):
        resolved = list(templates)
    else:
        raise TypeError('templates must be a template-set name or a sequence of format '
                        f'strings, got {type(templates).__name__}')
    if not resolved:
        raise ValueError('templates must not be empty')
    return [check_template(t, i) for i, t in enumerate(resolved)]
