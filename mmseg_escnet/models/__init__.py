"""Models: CLIP backbone, text vocabularies, aggregation necks, decode heads, segmentors."""
from .backbones import *  # noqa: F401,F403
from .decode_heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
from .text import *  # noqa: F401,F403
