# LMSeg with CLIP ViT-B/16 at 384 px (24 x 24 grid) (Tang et al., arXiv 2412.00364): CAT-Seg's
# aggregator and head on CLIP features fused with SAM ViT-B image-encoder features, one text
# embedding per class from LLM-written attribute descriptions. No official code is public; every
# reading is an argument here and is explained in docs/lmseg.md.
_base_ = ['./catseg_vitb16.py']
# Official SAM checkpoint; only its image encoder is used. Read by init_weights() when training
# starts, never at construction; a local path works too.
sam_checkpoint = 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth'
# Descriptions are written by your LLM (not shipped; docs/lmseg.md):
#   python tools/generate_descriptions.py --vocab coco_stuff171 \
#       --out data/descriptions/coco_stuff171.json --model gpt-4o
descriptions = dict(type='descriptions', reduce='mean',
                    class_name_template='A photo of a {} in the scene')
model = dict(
    type='LMSegEncoderDecoder',
    vocabulary=dict(_delete_=True, classes='coco_stuff171', synonyms='first',
                    templates=dict(**descriptions, file='data/descriptions/coco_stuff171.json')),
    sam_encoder=dict(
        type='SAMImageEncoder',
        arch='vit_b',
        img_size=1024,            # SAM's input size: 64 x 64 tokens
        checkpoint=sam_checkpoint,
        frozen=True),
    fusion=dict(
        type='SAMCLIPFusion',
        sam_dim=256,              # clip_dim: the backbone's embed_dim (derived)
        mode='scalar',            # w = sigmoid(theta) (arXiv v1); 'pixel': per-pixel w (v2)
        init_weight=0.5,
        zero_init_adapter=True))  # training starts from CLIP's own cost volume
# one embedding per class (reduce='mean'): the neck's prompt_channel 1 is derived
