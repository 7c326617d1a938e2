"""A label loader that keeps 16-bit class ids (A-847, PC-459).

mmseg's ``LoadAnnotations`` decodes the label map and casts it to ``uint8``
(``datasets/transforms/loading.py``), so ADE20K-847's ids 256..846 and PASCAL-Context-459's ids
256..459 would silently wrap around. :class:`LoadSegAnnotations` keeps the stored dtype
(``uint8`` or ``uint16``) and refuses anything else, so a colour PNG or a float map is an error
instead of wrong labels.
"""
import mmcv
import numpy as np
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

LABEL_DTYPES = (np.uint8, np.uint16)


@TRANSFORMS.register_module()
class LoadSegAnnotations(LoadAnnotations):
    """``LoadAnnotations`` for semantic labels stored as 8- or 16-bit single-channel images.

    Same arguments and behaviour as :class:`mmseg.datasets.transforms.LoadAnnotations`
    (``reduce_zero_label``, dataset ``label_map``), except that ``gt_seg_map`` keeps the file's
    dtype: ``(H, W)`` ``uint8`` for ``.png`` labels, ``(H, W)`` ``uint16`` for ``.tif`` labels.

    Raises:
        ValueError: If the file is not a single-channel 8- or 16-bit image, or if
            ``reduce_zero_label`` is used with 16-bit labels (whose ignore value is not 255).
    """

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        data = fileio.get(path, backend_args=self.backend_args)
        seg_map = mmcv.imfrombytes(data, flag='unchanged', backend=self.imdecode_backend)
        if seg_map is None:
            raise ValueError(f'label map {path} could not be decoded')
        seg_map = seg_map.squeeze()
        if seg_map.ndim != 2 or seg_map.dtype.type not in LABEL_DTYPES:
            raise ValueError(f'label map {path} must be a single-channel uint8/uint16 image, got '
                             f'dtype {seg_map.dtype} and shape {seg_map.shape}')

        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label != results['reduce_zero_label']:
            raise ValueError(f'the dataset has reduce_zero_label={results["reduce_zero_label"]} '
                             f'but the transform has {self.reduce_zero_label}')
        if self.reduce_zero_label:
            if seg_map.dtype != np.uint8:
                raise ValueError(f'reduce_zero_label needs uint8 labels (ignore 255); {path} '
                                 f'is {seg_map.dtype}')
            seg_map = seg_map.copy()
            seg_map[seg_map == 0] = 255
            seg_map = seg_map - 1
            seg_map[seg_map == 254] = 255
        label_map = results.get('label_map')
        if label_map:
            source = seg_map.copy()
            for old_id, new_id in label_map.items():
                seg_map[source == old_id] = new_id
        results['gt_seg_map'] = seg_map
        results['seg_fields'].append('gt_seg_map')
