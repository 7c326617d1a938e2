"""Models: CLIP backbone, class text embeddings, shared layers, aggregation necks, decode heads,
segmentors, and the contracts between them (:mod:`.structures`)."""
from .backbones import *  # noqa: F401,F403
from .decode_heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
from .structures import AggregatedCost, DecodeInputs  # noqa: F401
from .text import *  # noqa: F401,F403
