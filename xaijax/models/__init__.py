"""Model zoo: Flax (linen) CNNs with named taps, preprocessing and ImageNet labels."""

from xaijax.models.base import Model
from xaijax.models.base import ModelSpec
from xaijax.models.base import available
from xaijax.models.base import build
from xaijax.models.base import check_finite
from xaijax.models.base import check_input
from xaijax.models.base import get
from xaijax.models.base import images_from_normalised
from xaijax.models.base import preprocess
from xaijax.models.base import register
from xaijax.models.base import wrap
from xaijax.models import small_cnn as _small_cnn  # noqa: F401  (registers)
from xaijax.models import small_vgg as _small_vgg  # noqa: F401  (registers)
from xaijax.models import vgg as _vgg  # noqa: F401  (registers)
from xaijax.models import efficientnet as _efficientnet  # noqa: F401  (registers)
from xaijax.models import resnet as _resnet  # noqa: F401  (registers)
from xaijax.models import googlenet as _googlenet  # noqa: F401  (registers)
