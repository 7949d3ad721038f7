import pytest

import dynconv_mm  # noqa: F401  (registers the conv types)
from dynconv_mm.layers import DynamicConv2d, DyNetConv2d, ODConv2d

LAYERS = {'DynamicConv': DynamicConv2d, 'ODConv': ODConv2d,
          'DyNetConv': DyNetConv2d}


@pytest.fixture(params=list(LAYERS))
def layer_type(request):
    return request.param
