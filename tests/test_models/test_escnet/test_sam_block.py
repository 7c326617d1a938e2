"""SAM block (ESC-Net §3.4) and official SAM weight loading, against segment_anything itself."""
import os.path as osp
from functools import partial

import pytest
import torch
import torch.nn as nn
from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                       TwoWayTransformer)

from mmseg_escnet.checkpoints.download import cache_path
from mmseg_escnet.checkpoints.sam_official import escnet_sam_weights, load_sam_checkpoint
from mmseg_escnet.checkpoints.state_dict_fit import CheckpointMismatchError
from mmseg_escnet.models.necks.esc_neck import ESCNeck
from mmseg_escnet.models.necks.sam_block import SAMBlock, build_prompt_encoder, encode_prompts

GRID = (6, 6)
S = 256
TEXT_DIM = 16
B, T, P = 2, 3, 5  # images, classes, points per prompt set


@pytest.fixture(scope='module', autouse=True)
def _single_thread():
    """Tiny matmuls: one intra-op thread avoids OpenMP spin contention on busy CPUs."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _build_official_sam() -> Sam:
    """A real SAM (segment_anything classes, official decoder config) with a tiny image encoder."""
    torch.manual_seed(0)
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, in_chans=3, embed_dim=32,
                                      depth=1, num_heads=2, out_chans=S, qkv_bias=True,
                                      norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                      use_rel_pos=True, window_size=2),
        prompt_encoder=PromptEncoder(embed_dim=S, image_embedding_size=(64, 64),
                                     input_image_size=(1024, 1024), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=S, mlp_dim=2048, num_heads=8),
            transformer_dim=S, iou_head_depth=3, iou_head_hidden_dim=256))
    with torch.no_grad():  # biases / LN affines away from their 0 / 1 defaults
        for p in sam.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    return sam.eval()


@pytest.fixture(scope='module')
def official(tmp_path_factory):
    sam = _build_official_sam()
    path = str(tmp_path_factory.mktemp('sam') / 'sam_vit_t_000000.pth')
    torch.save(sam.state_dict(), path)  # exactly as published: a plain Sam state dict
    return sam, path


def _neck(path: str, *, num_blocks: int = 4, layer_map: str = 'mod', **kwargs) -> ESCNeck:
    """An ESCNeck whose prompt encoder and SAM blocks are initialised from the SAM file."""
    torch.manual_seed(1)
    neck = ESCNeck(embed_dim=TEXT_DIM, num_blocks=num_blocks, hidden_dim=16, sam_init='pretrained',
                   sam_checkpoint=path, sam_layer_map=layer_map, num_heads=2,
                   appearance_guidance_dim=16, text_guidance_dim=16, pad_len=0,
                   feature_resolution=GRID, window_size=3, **kwargs)
    neck.init_weights()
    return neck


@pytest.fixture(scope='module')
def loaded(official):
    """Our prompt encoder + 4 blocks ('mod' mapping) initialised from the checkpoint file."""
    neck = _neck(official[1])
    return neck.prompt_encoder, list(neck.sam_blocks)


def _official_grid_encoder(sam: Sam) -> PromptEncoder:
    enc = PromptEncoder(embed_dim=S, image_embedding_size=GRID, input_image_size=GRID,
                        mask_in_chans=16)
    enc.load_state_dict(sam.prompt_encoder.state_dict())
    return enc


def _prompts(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, GRID[1], (n, P), generator=gen),
                          torch.randint(0, GRID[0], (n, P), generator=gen)], -1).float()
    labels = torch.ones(n, P, dtype=torch.long)
    masks = torch.randn(n, 1, 4 * GRID[0], 4 * GRID[1], generator=gen) * 3
    return coords, labels, masks


def _inputs(pe: PromptEncoder, seed: int = 0, b: int = B, t: int = T):
    gen = torch.Generator().manual_seed(seed + 100)
    coords, labels, masks = _prompts(b * t, seed)
    with torch.no_grad():
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=masks)
    image = torch.randn(b, S, *GRID, generator=gen)
    text = torch.randn(b, t, TEXT_DIM, generator=gen)
    return image, pe.get_dense_pe().detach(), sparse, dense, text


# ----------------------------------------------------------------------------- loading


def test_load_plain_and_wrapped_checkpoints(official, tmp_path):
    sam, path = official
    state = load_sam_checkpoint(path)
    expected = {k: v for k, v in sam.state_dict().items()
                if k.startswith(('prompt_encoder.', 'mask_decoder.'))}
    assert set(state) == set(expected)  # image encoder dropped, all decoder keys kept
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    legacy = str(tmp_path / 'legacy.pth')  # pre-zip serialisation: cannot be memory-mapped
    torch.save(sam.state_dict(), legacy, _use_new_zipfile_serialization=False)
    other = load_sam_checkpoint(legacy)
    assert set(other) == set(state) and all(torch.equal(other[k], state[k]) for k in state)
    for wrapper in ('model', 'state_dict'):
        wrapped = str(tmp_path / f'{wrapper}.pth')
        torch.save({wrapper: sam.state_dict(), 'meta': {'epoch': 1}}, wrapped)
        other = load_sam_checkpoint(wrapped)
        assert set(other) == set(state) and all(torch.equal(other[k], state[k]) for k in state)


def test_url_downloads_into_cache_dir(official, tmp_path, monkeypatch):
    _, path = official
    url = 'file://' + osp.abspath(path)
    cache = tmp_path / 'checkpoints'
    state = load_sam_checkpoint(url, cache_dir=str(cache))
    assert osp.isfile(cache_path(url, str(cache)))
    assert torch.equal(state['mask_decoder.iou_token.weight'],
                       load_sam_checkpoint(path)['mask_decoder.iou_token.weight'])
    # default: the package's checkpoint cache under $MMSEG_ESCNET_CACHE
    monkeypatch.setenv('MMSEG_ESCNET_CACHE', str(tmp_path / 'home'))
    load_sam_checkpoint(url)
    assert cache_path(url).startswith(str(tmp_path / 'home')) and osp.isfile(cache_path(url))


def test_prompt_encoder_equals_official(official, loaded):
    sam, _ = official
    ours, _ = loaded
    ref = _official_grid_encoder(sam)
    coords, labels, masks = _prompts(4)
    labels[0, 1] = 0  # a negative point too
    with torch.no_grad():
        sparse, dense = ours(points=(coords, labels), boxes=None, masks=masks)
        sparse_ref, dense_ref = ref(points=(coords, labels), boxes=None, masks=masks)
        _, no_mask = ours(points=(coords, labels), boxes=None, masks=None)
        _, no_mask_ref = ref(points=(coords, labels), boxes=None, masks=None)
    assert sparse.shape == (4, P + 1, S) and dense.shape == (4, S, *GRID)
    torch.testing.assert_close(sparse, sparse_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(dense, dense_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(no_mask, no_mask_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.get_dense_pe(), ref.get_dense_pe(), atol=1e-5, rtol=0)
    # pad token is SAM's not_a_point_embed
    torch.testing.assert_close(sparse[:, -1], sam.prompt_encoder.not_a_point_embed.weight
                               .expand(4, -1), atol=1e-6, rtol=0)


def test_grid_units_match_sam_image_frame_and_dense_pe(official, loaded):
    """A point at cell (row r, col c) == the same spot in SAM's 1024 frame == dense PE[r, c]."""
    sam, _ = official
    ours, _ = loaded
    h, w = GRID
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    coords = torch.stack([cols.flatten(), rows.flatten()], -1).float()[None]  # (1, h*w, 2)
    labels = torch.ones(1, h * w, dtype=torch.long)
    frame = torch.tensor([1024 / w, 1024 / h])
    with torch.no_grad():
        sparse, _ = ours(points=(coords, labels), boxes=None, masks=None)
        sparse_1024, _ = sam.prompt_encoder(points=((coords + 0.5) * frame - 0.5, labels),
                                            boxes=None, masks=None)
        dense_pe = ours.get_dense_pe()[0].flatten(1).t()  # (S, h, w) -> (h*w, S)
    torch.testing.assert_close(sparse, sparse_1024, atol=1e-4, rtol=0)
    point = sparse[0, :-1] - sam.prompt_encoder.point_embeddings[1].weight
    torch.testing.assert_close(point, dense_pe, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.get_dense_pe()[0], sam.prompt_encoder.pe_layer(GRID),
                               atol=1e-6, rtol=0)


def _official_tokens(sam: Sam, block: SAMBlock, sparse, text):
    out = torch.cat([sam.mask_decoder.iou_token.weight, sam.mask_decoder.mask_tokens.weight])
    out = out.unsqueeze(0).expand(sparse.shape[0], -1, -1)
    return torch.cat([out, sparse, block.text_proj(text.flatten(0, 1)).unsqueeze(1)], dim=1)


@pytest.mark.parametrize('layer', [0, 1])
def test_block_equals_official_layer(official, loaded, layer):
    sam, _ = official
    pe, blocks = loaded
    for k in (layer, layer + 2):  # 'mod': blocks 2, 3 are copies of layers 0, 1
        block = blocks[k]
        image, image_pe, sparse, dense, text = _inputs(pe, seed=k)
        with torch.no_grad():
            queries, keys = block.refine(image, image_pe, sparse, dense, text)
            tokens = _official_tokens(sam, block, sparse, text)
            src = torch.repeat_interleave(image, T, dim=0) + dense  # as SAM's MaskDecoder
            src = src.flatten(2).permute(0, 2, 1)
            pos = torch.repeat_interleave(image_pe, B * T, dim=0).flatten(2).permute(0, 2, 1)
            q_ref, k_ref = sam.mask_decoder.transformer.layers[layer](
                queries=tokens, keys=src, query_pe=tokens, key_pe=pos)
        assert keys.shape == (B * T, GRID[0] * GRID[1], S)
        assert queries.shape == (B * T, 5 + P + 1 + 1, S)
        torch.testing.assert_close(keys, k_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(queries, q_ref, atol=1e-5, rtol=0)


def test_blocks_0_1_chained_reproduce_official_two_way_transformer(official, loaded):
    sam, _ = official
    pe, blocks = loaded
    image, image_pe, sparse, dense, text = _inputs(pe, seed=7)
    with torch.no_grad():
        tokens = blocks[0].build_queries(sparse, text.flatten(0, 1))
        q0, k0 = blocks[0].refine(image, image_pe, sparse, dense, text)
        _, k1 = blocks[1].block(queries=q0, keys=k0, query_pe=tokens,
                                key_pe=image_pe.flatten(2).transpose(1, 2))
        src = torch.repeat_interleave(image, T, dim=0) + dense
        _, k_ref = sam.mask_decoder.transformer(src, torch.repeat_interleave(image_pe, B * T, 0),
                                                tokens)
    torch.testing.assert_close(k1, k_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('layer_map,expected', [('mod', [0, 1, 0, 1]), ('clamp', [0, 1, 1, 1])])
def test_layer_map_copies(official, layer_map, expected):
    sam, path = official
    torch.manual_seed(1)
    random = ESCNeck(embed_dim=TEXT_DIM, num_blocks=4, hidden_dim=16, sam_init='random',
                     sam_layer_map=layer_map, num_heads=2, appearance_guidance_dim=16,
                     text_guidance_dim=16, pad_len=0, feature_resolution=GRID, window_size=3)
    neck = _neck(path, layer_map=layer_map)
    tokens = torch.cat([sam.mask_decoder.iou_token.weight, sam.mask_decoder.mask_tokens.weight])
    for block, before, m in zip(neck.sam_blocks, random.sam_blocks, expected):
        assert block.skip_first_layer_pe == (m == 0)
        ref = sam.mask_decoder.transformer.layers[m].state_dict()
        got = block.block.state_dict()
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
        assert torch.equal(block.output_tokens.weight, tokens)
        for name in ('text_proj', 'fuse'):  # not in SAM: kept as initialised
            assert all(torch.equal(a, b) for a, b in zip(getattr(block, name).parameters(),
                                                         getattr(before, name).parameters()))
    ref = sam.prompt_encoder.state_dict()
    assert all(torch.equal(neck.prompt_encoder.state_dict()[k], ref[k]) for k in ref)
    with torch.no_grad():  # independent copies
        neck.sam_blocks[-1].block.norm1.weight.add_(1.0)
    assert not torch.equal(neck.sam_blocks[-1].block.norm1.weight,
                           neck.sam_blocks[1].block.norm1.weight)


# ----------------------------------------------------------------------------- forward


def _fuse_by_hand(block: SAMBlock, image, mean):
    w = block.fuse.weight[:, :, 0, 0]  # (S, 2S)
    x = torch.cat([image, mean], dim=1)
    return torch.einsum('oc,bchw->bohw', w, x) + block.fuse.bias[None, :, None, None]


def test_batched_equals_one_at_a_time_and_eq2_by_hand(loaded):
    pe, blocks = loaded
    block = blocks[1]
    image, image_pe, sparse, dense, text = _inputs(pe, seed=3)
    with torch.no_grad():
        _, keys = block.refine(image, image_pe, sparse, dense, text)
        out = block(image, image_pe, sparse, dense, text)
        means = []
        for b in range(B):
            per_class = []
            for t in range(T):
                n = b * T + t
                _, k = block.refine(image[b:b + 1], image_pe, sparse[n:n + 1], dense[n:n + 1],
                                    text[b:b + 1, t:t + 1])
                torch.testing.assert_close(keys[n:n + 1], k, atol=1e-5, rtol=0)
                per_class.append(k[0])
            means.append(torch.stack(per_class).mean(0).t().reshape(S, *GRID))  # (h*w,S)->(S,h,w)
        ref = _fuse_by_hand(block, image, torch.stack(means))
    assert out.shape == (B, S, *GRID)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize('chunk', [1, 2, 3, 10])
def test_chunked_equals_unchunked(loaded, chunk):
    pe, blocks = loaded
    image, image_pe, sparse, dense, text = _inputs(pe, seed=5)
    with torch.no_grad():
        full = blocks[0](image, image_pe, sparse, dense, text)
        part = blocks[0](image, image_pe, sparse, dense, text, class_chunk_size=chunk)
    torch.testing.assert_close(part, full, atol=1e-5, rtol=0)


def test_gradients_reach_all_parts(loaded):
    pe, _ = loaded
    block = SAMBlock(text_dim=TEXT_DIM, embed_dim=S)
    image, image_pe, sparse, dense, text = _inputs(pe, seed=9, b=1, t=2)
    image.requires_grad_(True)
    block(image, image_pe, sparse, dense, text, class_chunk_size=1).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert image.grad.abs().sum() > 0


def test_without_output_tokens(official):
    _, path = official
    block = SAMBlock(text_dim=TEXT_DIM, num_output_tokens=0, skip_first_layer_pe=True)
    assert block.output_tokens is None
    pe = _neck(path, num_blocks=1).prompt_encoder
    image, image_pe, sparse, dense, text = _inputs(pe, b=1, t=2)
    with torch.no_grad():
        queries, _ = block.refine(image, image_pe, sparse, dense, text)
        out = block(image, image_pe, sparse, dense, text)
    assert queries.shape == (2, P + 1 + 1, S) and out.shape == (1, S, *GRID)


def test_parameter_count_text_dim_768():
    block = SAMBlock(text_dim=768)
    assert sum(p.numel() for p in block.block.parameters()) == 1_579_520
    # + output tokens 5*256 + text_proj 768*256+256 + fuse 512*256+256
    assert sum(p.numel() for p in block.parameters()) == 1_579_520 + 1_280 + 196_864 + 131_328
    pe = build_prompt_encoder()
    assert pe.get_dense_pe().shape == (1, 256, 24, 24)
    assert sum(p.numel() for p in pe.parameters()) == 6_220


# ----------------------------------------------------------------------------- errors


def test_loader_errors(official, tmp_path):
    sam, path = official
    not_sam = str(tmp_path / 'clip.pth')
    torch.save({'visual.conv1.weight': torch.zeros(2)}, not_sam)
    with pytest.raises(ValueError, match=r'clip\.pth: not a SAM checkpoint'):
        load_sam_checkpoint(not_sam)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match='garbage.pth is not a torch checkpoint'):
        load_sam_checkpoint(str(garbage))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_sam_checkpoint(str(tmp_path / 'nope.pth'))
    with pytest.raises(TypeError, match='path or URL'):
        load_sam_checkpoint(3)
    state = sam.state_dict()
    del state['mask_decoder.iou_token.weight']
    del state['mask_decoder.transformer.layers.1.norm4.bias']
    partial_path = str(tmp_path / 'partial.pth')
    torch.save(state, partial_path)
    with pytest.raises(ValueError, match=r'partial\.pth.*2 required.*iou_token.*layers\.1\.norm4'):
        load_sam_checkpoint(partial_path)


def test_init_errors(official, tmp_path):
    sam, path = official
    state = load_sam_checkpoint(path)
    with pytest.raises(ValueError, match='layer_map'):
        escnet_sam_weights(state, num_blocks=1, layer_map='wrap')
    with pytest.raises(CheckpointMismatchError, match=r'sam_vit_t_000000.pth does not fit the SAM '
                       r'blocks of ESCNeck: \d+ weights of another shape \(prompt_encoder\.'):
        _neck(path, sam_dim=128)
    no_tokens = {k: v for k, v in state.items() if 'iou_token' not in k}
    with pytest.raises(ValueError, match='iou_token.*output tokens'):
        escnet_sam_weights(no_tokens, num_blocks=1)
    bad = dict(sam.state_dict())
    bad['mask_decoder.transformer.layers.1.mlp.lin1.bias'] = torch.zeros(7)
    torch.save(bad, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointMismatchError,
                       match=r'1 weight of another shape \(sam_blocks\.1\.block\.mlp\.lin1\.bias '
                             r'\(7,\) in the file, \(2048,\) in the model\)'):
        _neck(str(tmp_path / 'bad.pth'), num_blocks=2)


@pytest.mark.parametrize('points, boxes, masks', [(True, False, True), (True, False, False),
                                                  (False, True, False), (True, True, True),
                                                  (False, True, True), (False, False, True)])
def test_encode_prompts_through_the_public_api_keeps_sams_token_layout(loaded, points, boxes,
                                                                       masks):
    """K points and K boxes per prompt set through ``PromptEncoder.forward`` only: the same
    tokens as SAM's own embedding of the points (+ pad without boxes), then every box's two
    corners; the mask (or SAM's "no mask" embedding) as the dense prompt."""
    pe, _ = loaded
    n, k = 4, P
    coords, labels, mask_logits = _prompts(n)
    gen = torch.Generator().manual_seed(7)
    corner = torch.randint(0, GRID[0] - 2, (n, k, 2), generator=gen).float()
    box = torch.cat([corner, corner + 2], dim=-1)  # (N, K, 4) inclusive corners
    args = dict(points=coords if points else None, point_labels=labels if points else None,
                boxes=box if boxes else None, masks=mask_logits if masks else None)
    with torch.no_grad():
        sparse, dense = encode_prompts(pe, **args)
        expected = []
        if points:
            expected.append(pe._embed_points(coords, labels, pad=not boxes))
        if boxes:
            expected.append(pe._embed_boxes(box.reshape(n * k, 4)).reshape(n, 2 * k, S))
        expected = torch.cat(expected, 1) if expected else torch.zeros(n, 0, S)
        expected_dense = (pe._embed_masks(mask_logits) if masks else
                          pe.no_mask_embed.weight.reshape(1, S, 1, 1).expand(n, S, *GRID))
    torch.testing.assert_close(sparse, expected, rtol=0, atol=0)
    torch.testing.assert_close(dense, expected_dense, rtol=0, atol=0)
