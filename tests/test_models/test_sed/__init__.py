"""Tests of SED (xb534/SED): the cost neck, the gradual fusion decoder and CER."""
