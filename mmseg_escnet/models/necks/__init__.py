"""necks."""
from .catseg_aggregator import CATSegAggregator, CATSegAggregatorLayer

__all__ = ['CATSegAggregator', 'CATSegAggregatorLayer']
