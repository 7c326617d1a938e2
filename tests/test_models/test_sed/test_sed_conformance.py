"""SEDCostNeck + SEDHead against outputs computed by the official SED code (xb534/SED).

The reference files hold the official ``Aggregator`` weights and its outputs on small inputs:
the non-fast decoder with training pooling (2 x 2) and evaluation pooling (1 x 1), and the
fast decoder (category early rejection) with its per-stage survivors.
"""
import pytest
import torch

from mmseg_escnet.checkpoints.sed_official import (OFFICIAL_SED_PREFIX, map_sed_decoder_key,
                                                   sed_decoder_to_mmseg)
from mmseg_escnet.models.decode_heads.sed_head import SEDHead
from mmseg_escnet.models.layers.official_cost import official_cost
from mmseg_escnet.models.necks.sed_cost import SEDCostNeck
from mmseg_escnet.models.structures import PRUNED_LOGIT, ClassFilter, DecodeInputs

ATOL = 1e-5


def build_official(data: dict, **head_overrides) -> tuple:
    """Neck and head with the dims of an official ``Aggregator`` config and its weights."""
    cfg = data['config']
    # the official decoder_corr_guidance_dims are the input widths (P, d0, d1) of the chain
    assert list(cfg['decoder_corr_guidance_dims']) == [cfg['prompt_channel'],
                                                       *cfg['decoder_guidance_proj_dims'][:2]]
    neck = SEDCostNeck(prompt_channel=cfg['prompt_channel'], hidden_dim=cfg['hidden_dim'])
    head_kwargs = dict(hidden_dim=cfg['hidden_dim'], prompt_channel=cfg['prompt_channel'],
                       decoder_dims=tuple(cfg['decoder_dims']),
                       decoder_guidance_dims=tuple(cfg['decoder_guidance_dims']),
                       decoder_guidance_proj_dims=tuple(cfg['decoder_guidance_proj_dims']),
                       num_heads=cfg['nheads'], kernel_sizes=tuple(cfg['kernel_size']),
                       pooling_size=(2, 2), test_pooling_size=(1, 1),
                       num_classes=cfg['T'])
    head_kwargs.update(head_overrides)
    head = SEDHead(**head_kwargs)
    converted = sed_decoder_to_mmseg(data['state_dict_official'])
    neck.load_state_dict({k[len('neck.'):]: v for k, v in converted.items()
                          if k.startswith('neck.')}, strict=True)
    head.load_state_dict({k[len('decode_head.'):]: v for k, v in converted.items()
                          if k.startswith('decode_head.')}, strict=True)
    return neck, head


def skips(data: dict, batch=slice(None)) -> list:
    """The encoder skips of a reference file, shallower first (res5 is unused)."""
    return [data['guidance_feats'][name][batch] for name in ('res2', 'res3', 'res4')]


def decode_inputs(neck, data, class_filter=None) -> DecodeInputs:
    """The neck's output for the head; a head-stage filter goes to the head only."""
    cost = neck(data['img_feats'], data['text_feats'], data['img_feats'])
    return DecodeInputs.from_cost(cost, skips(data), data['text_feats'].shape[1], class_filter)


@torch.no_grad()
def test_train_file_in_training_mode(conformance):
    """Training mode (2 x 2 pooling): logits, the three aux logits and the correlation."""
    data = conformance('sed_decoder_train.pt')
    assert tuple(data['config']['pooling_size']) == (2, 2)
    neck, head = build_official(data)
    neck.train()
    head.train()
    inputs = decode_inputs(neck, data)
    torch.testing.assert_close(inputs.corr, data['corr'], atol=ATOL, rtol=0)
    logits, aux = head(inputs)
    torch.testing.assert_close(logits, data['logits'], atol=ATOL, rtol=0)
    assert len(aux) == 3
    for ours, ref in zip(aux, data['aux_logits']):
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize('variant', ['plain', 'official_cost', 'class_chunks'])
@torch.no_grad()
def test_eval_file_in_eval_mode(conformance, variant):
    """Eval mode (1 x 1 pooling); the shared-work shortcuts and class chunks change nothing."""
    data = conformance('sed_decoder_eval.pt')
    assert tuple(data['config']['pooling_size']) == (1, 1)
    neck, head = build_official(data, class_chunk_size=3 if variant == 'class_chunks' else None)
    neck.eval()
    head.eval()
    inputs = decode_inputs(neck, data)
    torch.testing.assert_close(inputs.corr, data['corr'], atol=ATOL, rtol=0)
    if variant == 'official_cost':
        with official_cost(head):
            logits = head(inputs)
    else:
        logits = head(inputs)
    torch.testing.assert_close(logits, data['logits'], atol=ATOL, rtol=0)
    if variant == 'plain':
        guidance = head.project_guidance(inputs.clip_features)
        again, aux = head.decode(inputs.cost, inputs.corr, guidance, with_aux=True)
        torch.testing.assert_close(again, logits, atol=0, rtol=0)
        for ours, ref in zip(aux, data['aux_logits']):
            torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


@torch.no_grad()
def test_fast_file_category_early_rejection(conformance):
    """CER with the file's K: survivors per stage, probabilities of the survivors, and the
    rejected classes at PRUNED_LOGIT (official: probability exactly 0)."""
    data = conformance('sed_decoder_fast.pt')
    k = data['config']['topK']
    neck, head = build_official(data)
    neck.eval()
    head.eval()
    class_filter = ClassFilter('sed_cer', k)
    inputs = decode_inputs(neck, data, class_filter)
    torch.testing.assert_close(inputs.corr, data['corr'], atol=ATOL, rtol=0)

    recorded = {}
    hooks = [getattr(head, f'head{i}').register_forward_hook(
        lambda module, args, out, i=i: recorded.__setitem__(i, out[:, 0]))
        for i in range(3)]
    try:
        logits = head(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    # the auxiliary maps the rejection was decided on; the fitted heads (weights of L1 norm up
    # to ~660, logits up to ~130) amplify the float32 rounding of their inputs to ~2e-4, so
    # these are compared at 1e-5 of their scale
    for i, ref in enumerate(data['stage_aux_logits']):
        torch.testing.assert_close(recorded[i], ref[0], atol=1e-5 * ref.abs().max().item(),
                                   rtol=0)

    kept = data['valid_idx']
    assert logits.shape == data['probs'].shape
    torch.testing.assert_close(logits[:, kept].sigmoid(), data['probs'][:, kept], atol=ATOL,
                               rtol=0)
    assert bool((data['probs'][:, ~kept] == 0).all())
    assert bool((logits[:, ~kept] == PRUNED_LOGIT).all())

    guidance = head.project_guidance(inputs.clip_features)
    again, stages = head.decode_cer(inputs.cost, inputs.corr, guidance, k=k)
    torch.testing.assert_close(again, logits, atol=0, rtol=0)
    assert [s.tolist() for s in stages[0]] == [s.tolist() for s in data['stage_kept_classes']]

    # without the filter: the official non-fast outputs of the same weights
    plain = head(decode_inputs(neck, data))
    torch.testing.assert_close(plain, data['logits_nonfast'], atol=ATOL, rtol=0)


def test_key_mapping(conformance):
    data = conformance('sed_decoder_train.pt')
    p = OFFICIAL_SED_PREFIX
    assert map_sed_decoder_key(p + 'conv1.weight') == 'neck.conv1.weight'
    assert map_sed_decoder_key(p + 'decoder2.cnext.dwconv.bias') == \
        'decode_head.decoder2.cnext.depthwise_conv.bias'
    assert map_sed_decoder_key(p + 'decoder1.cnext.pwconv2.weight') == \
        'decode_head.decoder1.cnext.pointwise_conv2.weight'
    assert map_sed_decoder_key(p + 'decoder3.cnext.gamma') == 'decode_head.decoder3.cnext.gamma'
    assert map_sed_decoder_key(p + 'decoder1.attention.attention.q.bias') == \
        'decode_head.decoder1.attention.attention.q.bias'
    assert map_sed_decoder_key(p + 'decoder_corr_guidance_projection.2.0.weight',
                               head_prefix='h.') == 'h.decoder_corr_guidance_projection.2.0.weight'
    assert map_sed_decoder_key(p + 'head.bias') == 'decode_head.head.bias'

    state_dict = dict(data['state_dict_official'])
    converted = sed_decoder_to_mmseg(state_dict)
    assert len(converted) == len(state_dict)
    neck, head = build_official(data)  # strict loads: every parameter is covered
    assert set(converted) == {f'neck.{k}' for k in neck.state_dict()} | \
        {f'decode_head.{k}' for k in head.state_dict()}

    # keys outside the decoder are left to other converters; unknown decoder keys are errors
    state_dict['sem_seg_head.predictor.clip_model.visual.trunk.stem.0.weight'] = torch.zeros(1)
    assert len(sed_decoder_to_mmseg(state_dict)) == len(converted)
    state_dict[p + 'text_guidance_projection.0.0.weight'] = torch.zeros(1)
    state_dict[p + 'decoder1.cnext.grn.gamma'] = torch.zeros(1)
    with pytest.raises(KeyError, match='text_guidance_projection.0.0.weight.*grn.gamma'):
        sed_decoder_to_mmseg(state_dict)
    with pytest.raises(KeyError, match='layers.0.swin_block'):
        map_sed_decoder_key(p + 'layers.0.swin_block.block_1.attn.q.weight')
    with pytest.raises(TypeError):
        sed_decoder_to_mmseg([('conv1.weight', torch.zeros(1))])
