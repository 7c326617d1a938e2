"""ESCNeck: composition, ablation switches, SAM initialisation, chunking, and the paper models on CPU."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.dataset import pseudo_collate
from mmseg.registry import DATASETS, MODELS
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.image_encoder import ImageEncoderViT

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.necks.esc_neck import ESCNeck
from mmseg_escnet.models.necks.sam_block import encode_prompts
from mmseg_escnet.models.structures import ClassFilter

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
GRID = (24, 24)


def _tiny_neck(**kwargs) -> ESCNeck:
    torch.manual_seed(0)
    args = dict(embed_dim=16, num_blocks=2, hidden_dim=16, sam_dim=16, sam_num_heads=2,
                sam_mlp_dim=32, sam_init='random', num_heads=2, appearance_guidance_dim=16,
                text_guidance_dim=16, pad_len=0, feature_resolution=GRID)
    args.update(kwargs)
    return ESCNeck(**args)


def _inputs(b=1, t=5, c=16):
    torch.manual_seed(1)
    img = torch.randn(b, c, *GRID)
    text = torch.nn.functional.normalize(torch.randn(b, t, 1, c), dim=-1)
    return img, text


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(use_sam=False),
    dict(ppg=dict(use_points=False, use_boxes=True, use_masks=True)),
    dict(ppg=dict(use_points=True, use_boxes=True, use_masks=False)),
    dict(sam_layer_map='clamp'),
])
def test_forward_backward_shapes(kwargs):
    neck = _tiny_neck(**kwargs).train()
    img, text = _inputs(b=2, t=5)
    img.requires_grad_(True)
    out = neck(img, text, img)
    assert out.cost.shape == (2, 16, 5, *GRID) and out.class_index is None
    out.cost.square().mean().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    has_sam = kwargs.get('use_sam', True)
    assert hasattr(neck, 'sam_blocks') == has_sam


def test_chunked_equals_unchunked_and_class_permutation():
    neck = _tiny_neck().eval()
    img, text = _inputs(t=7)
    with torch.no_grad():
        full = neck(img, text).cost
        neck.class_chunk_size = 3
        chunked = neck(img, text).cost
        perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
        permuted = neck(img, text[:, perm]).cost
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(permuted, full[:, :, perm], atol=1e-5, rtol=1e-5)


def test_checkpointed_chunks_give_the_same_gradients():
    img, text = _inputs(t=5)
    grads = []
    for kwargs in (dict(), dict(class_chunk_size=2, with_cp=True)):
        neck = _tiny_neck(**kwargs).train()
        neck(img, text).cost.square().mean().backward()
        grads.append({n: p.grad for n, p in neck.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


PROMPT_SETTINGS = {  # Table 3 (a)-(f): (points, boxes, masks) -> prompt-encoder parameters in use
    (True, False, False): {'point_embeddings.1', 'not_a_point_embed', 'no_mask_embed'},
    (False, True, False): {'point_embeddings.2', 'point_embeddings.3', 'no_mask_embed'},
    (True, True, False): {'point_embeddings.1', 'point_embeddings.2', 'point_embeddings.3',
                          'no_mask_embed'},
    (True, False, True): {'point_embeddings.1', 'not_a_point_embed', 'mask_downscaling'},
    (False, True, True): {'point_embeddings.2', 'point_embeddings.3', 'mask_downscaling'},
    (True, True, True): {'point_embeddings.1', 'point_embeddings.2', 'point_embeddings.3',
                         'mask_downscaling'},
}


@pytest.mark.parametrize('setting', PROMPT_SETTINGS, ids=str)
def test_prompt_parameters_without_a_use_are_frozen(setting):
    """DDP needs a gradient for every trainable parameter: what a prompt setting cannot reach
    is frozen, everything else gets a non-zero gradient from one backward pass."""
    points, boxes, masks = setting
    neck = _tiny_neck(ppg=dict(use_points=points, use_boxes=boxes, use_masks=masks)).train()
    img, text = _inputs(b=2, t=3)
    neck(img, text).cost.square().mean().backward()
    owners = ('point_embeddings.0', 'point_embeddings.1', 'point_embeddings.2',
              'point_embeddings.3', 'not_a_point_embed', 'no_mask_embed', 'mask_downscaling')
    trainable = {owner for name, param in neck.prompt_encoder.named_parameters()
                 if param.requires_grad for owner in owners if name.startswith(owner)}
    assert trainable == PROMPT_SETTINGS[setting]
    for name, param in neck.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def _object_scene(seed: int, c: int = 64, t: int = 3, noise: float = 0.3):
    """CLIP-like features in which class 0's direction is present inside a known box only
    (elsewhere the cosine with every class is of order 1 / sqrt(c)).

    Returns:
        tuple: img (1, c, h, w), text (1, t, 1, c) and the (h, w) bool object mask.
    """
    gen = torch.Generator().manual_seed(100 + seed)
    text = torch.nn.functional.normalize(torch.randn(1, t, 1, c, generator=gen), dim=-1)
    img = noise * torch.randn(1, c, *GRID, generator=gen)
    region = torch.zeros(GRID, dtype=torch.bool)
    region[4:11, 13:21] = True
    img[0, :, region] += text[0, 0, 0, :, None]  # class 0's direction inside the box
    return img, text, region


def _assert_prompts_on_object(blocks, region, t, what):
    for k, record in enumerate(blocks):
        points = record.prompts.points.view(1, t, 5, 2)[0, 0].long()  # class 0: (K, 2) (x, y)
        assert region[points[:, 1], points[:, 0]].all(), (what, k, points.tolist())
        foreground = record.prompts.regions.view(1, t, *GRID)[0, 0] >= 0
        iou = (foreground & region).sum() / (foreground | region).sum()
        assert iou >= 0.5, (what, k, float(iou))


@pytest.mark.parametrize('prompt_source', ['refined', 'initial'])
@pytest.mark.parametrize('seed', range(5))
def test_points_of_every_block_fall_in_the_class_region(seed, prompt_source):
    """Every block's PPG input is a class score by construction: with an image whose features
    match class 0 only inside a known box, the points of every block lie in that box, for any
    initialisation of the neck."""
    img, text, region = _object_scene(seed)
    torch.manual_seed(seed)
    neck = ESCNeck(embed_dim=64, num_blocks=4, hidden_dim=16, sam_dim=16, sam_num_heads=2,
                   sam_mlp_dim=32, sam_init='random', num_heads=2, appearance_guidance_dim=16,
                   text_guidance_dim=16, pad_len=0, feature_resolution=GRID,
                   prompt_source=prompt_source).train()
    calls, block_sparse = [], []
    neck.ppg.register_forward_hook(lambda m, args, out: calls.append(out))
    for block in neck.sam_blocks:
        block.register_forward_pre_hook(lambda m, args: block_sparse.append(args[2]))
    out, blocks = neck.forward_with_prompts(img, text)
    assert len(blocks) == len(block_sparse) == 4
    assert len(calls) == (4 if prompt_source == 'refined' else 1)  # 'initial': computed once
    torch.testing.assert_close(out.cost, neck(img, text).cost)
    for record, got in zip(blocks, block_sparse):  # each block is prompted with its own record
        sparse, _ = encode_prompts(neck.prompt_encoder, points=record.prompts.points,
                                   point_labels=record.prompts.point_labels,
                                   masks=record.prompts.masks)
        torch.testing.assert_close(got, sparse)
    if prompt_source == 'refined':  # the blocks read the refinement: their scores differ
        assert not torch.equal(blocks[1].score, blocks[0].score)
    else:
        assert all(record.prompts is blocks[0].prompts for record in blocks)
    _assert_prompts_on_object(blocks, region, 3, 'init')


def test_class_score_before_the_first_block_is_the_eq1_score():
    """Read back through the inverse of the 1x1 embedding, the embedded correlation is the
    Eq. 1 score (the template mean), for one template and for several."""
    from mmseg_escnet.models.layers.cost_volume import correlation, embed_cost
    for p in (1, 3):
        neck = _tiny_neck(prompt_channel=p)
        img, _ = _inputs(b=2, c=16)
        text = torch.nn.functional.normalize(torch.randn(2, 5, p, 16), dim=-1)
        corr = correlation(img, text)  # (B, P, T, h, w)
        score = neck.class_score(embed_cost(neck.corr_embed, corr))
        torch.testing.assert_close(score, corr.mean(dim=1), atol=1e-6, rtol=1e-5)
        _, blocks = neck.forward_with_prompts(img, text)
        torch.testing.assert_close(blocks[0].score, corr.mean(dim=1))


def test_refined_needs_a_pointwise_embedding_and_a_known_source():
    with pytest.raises(ValueError, match='embed_kernel_size=7 has no pointwise inverse'):
        _tiny_neck(embed_kernel_size=7)
    _tiny_neck(embed_kernel_size=7, prompt_source='initial')
    _tiny_neck(embed_kernel_size=7, use_sam=False)
    with pytest.raises(ValueError, match="prompt_source must be one of"):
        _tiny_neck(prompt_source='eq1')


def test_chunks_checkpoints_and_class_filters_give_the_plain_prompts():
    """Chunked and checkpointed class stages, and a test-time class filter (the kept classes
    run as if they were the whole vocabulary), prompt every block exactly as the plain path."""
    img, text = _inputs(t=7)
    ref_neck = _tiny_neck(num_blocks=3)

    def prompts_of(neck, *args, **kwargs):
        _, blocks = neck.forward_with_prompts(*args, **kwargs)
        return [(r.prompts.points, r.prompts.masks, r.prompts.regions) for r in blocks]

    with torch.no_grad():
        plain = prompts_of(ref_neck.eval(), img, text)
        ref_neck.class_chunk_size = 3
        chunked = prompts_of(ref_neck, img, text)
    for a, b in zip(plain, chunked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ref_neck.class_chunk_size = None
    ref_neck.train()
    plain_train = prompts_of(ref_neck, img, text)
    ref_neck.class_chunk_size, ref_neck.with_cp = 2, True
    for a, b in zip(plain_train, prompts_of(ref_neck, img, text)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ref_neck.class_chunk_size, ref_neck.with_cp = None, False
    ref_neck.eval()
    with torch.no_grad():
        out, filtered = ref_neck.forward_with_prompts(img, text,
                                                      class_filter=ClassFilter('topk', 3))
        kept = out.class_index[0]
        subset = prompts_of(ref_neck, img, text[:, kept])
    assert len(kept) == 3
    for record, (points, masks, regions) in zip(filtered, subset):
        torch.testing.assert_close(record.prompts.points, points, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(record.prompts.masks, masks, atol=1e-5, rtol=1e-5)
        assert torch.equal(record.prompts.regions, regions)


@pytest.mark.parametrize('seed', range(3))
def test_prompts_stay_on_the_object_after_training_steps_of_the_tiny_model(seed, tmp_path):
    """The tiny ESC-Net trained for a few steps on its synthetic data still prompts every block
    on the object: training moves the refinement, not the sign of the readout."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py'))
    cfg.train_dataloader.dataset.update(data_root=str(tmp_path / 'data'),
                                        splits=dict(train=8, val=1))
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(4):
        batch = pseudo_collate([dataset[(2 * step + i) % len(dataset)] for i in range(2)])
        data = model.data_preprocessor(batch, training=True)
        losses = model.loss(data['inputs'], data['data_samples'])
        loss, _ = model.parse_losses(losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    neck = model.neck.eval()
    c = neck.text_guidance_projection[0].in_features
    img, text, region = _object_scene(seed, c=c, t=4, noise=0.15)  # c = 32: less noise
    with torch.no_grad():
        _, blocks = neck.forward_with_prompts(img, text)
    assert len(blocks) == len(neck.sam_blocks) == 2
    _assert_prompts_on_object(blocks, region, 4, 'trained')


def test_large_vocabulary_is_pruned_before_sam():
    neck = _tiny_neck(pad_len=4).eval()
    img, text = _inputs(t=9)
    with torch.no_grad():
        out = neck(img, text)
    assert out.cost.shape[2] == 4 and out.class_index.shape == (1, 4)


def test_errors():
    with pytest.raises(ValueError, match='sam_checkpoint'):
        _tiny_neck(sam_init='pretrained')
    with pytest.raises(ValueError, match='sam_init'):
        _tiny_neck(sam_init='imagenet')
    with pytest.raises(ValueError, match='ppg gives no prompt'):
        _tiny_neck(ppg=dict(use_points=False, use_boxes=False, use_masks=False))
    with pytest.raises(ValueError, match='class_chunk_size'):
        _tiny_neck(class_chunk_size=0)


def _official_sam_checkpoint(path) -> dict:
    """A randomly initialised official SAM (tiny image encoder, real 256-d decoder), saved as published."""
    torch.manual_seed(3)
    sam = Sam(image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=1,
                                            num_heads=1, out_chans=256),
              prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(4, 4),
                                           input_image_size=(64, 64), mask_in_chans=16),
              mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=256,
                                       transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                                                                     mlp_dim=2048, num_heads=8)))
    state = sam.state_dict()
    torch.save(state, path)
    return state


def test_init_weights_loads_official_sam_with_mod_mapping(tmp_path):
    path = str(tmp_path / 'sam_vit_tiny.pth')
    state = _official_sam_checkpoint(path)
    neck = ESCNeck(embed_dim=16, num_blocks=4, sam_init='pretrained', sam_checkpoint=path,
                   pad_len=0, feature_resolution=GRID)
    neck.init_weights()
    for k, block in enumerate(neck.sam_blocks):
        layer = f'mask_decoder.transformer.layers.{k % 2}.'
        for name, value in block.block.state_dict().items():
            assert torch.equal(value, state[layer + name]), (k, name)
        assert block.block.skip_first_layer_pe == (k % 2 == 0)
    assert torch.equal(neck.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
                       state['prompt_encoder.pe_layer.positional_encoding_gaussian_matrix'])


PAPER_CONFIGS = ['escnet_vitb16.py', 'escnet_vitl14.py']


@pytest.mark.slow
@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_paper_model_in_class_chunks(name):
    """The paper configs at the paper resolution, on CPU, in training mode: the forward through
    the class chunks and activation checkpointing that bound their training memory, and for ViT-B
    the backward through them (ViT-L's backward runs the same code, 24 layers deep; skipped to keep
    the suite's time). One training step at 171 classes is measured by
    tools/analysis/benchmark_training.py (docs/escnet.md)."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.neck.sam_init = 'random'  # no download in tests; shapes and the graph are the same
    cfg.model.neck.update(class_chunk_size=4, with_cp=True)
    cfg.model.backbone.text_with_cp = True
    cfg.model.decode_head.update(class_chunk_size=4, with_cp=True)
    cfg.model.vocabulary = ['person', 'dog', 'grass', 'sky', 'road', 'tree', 'car', 'wall', 'cat']
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    res = model.clip_resolution
    image = torch.randn(1, 3, *res)
    logits = model.decode_head(model.extract_feat(image))  # with grad: checkpointed chunks
    assert logits.shape == (1, 9, 96, 96)  # 24 x 24 grid for both CLIPs -> 4x upsampled
    assert torch.isfinite(logits).all()
    if name != 'escnet_vitb16.py':
        return
    logits.float().mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith('neck.sam_blocks.3.block') for n in grads)
    assert any(n.startswith('backbone.clip_model.transformer') for n in grads)  # text tower
    assert any(n.startswith('decode_head.') for n in grads)
