"""Every zoo model torchvision also has is torchvision's model, to the last unit.

Reference: torchvision 0.29 builders with ``weights=None`` (no download). The
comparison perturbs batch-norm statistics so BN is not the identity, loads
torchvision's ``state_dict`` with ``strict=True`` and runs both in float64.
"""
import pytest

from archlab.torchio.compare import compare_with_torchvision
from archlab.zoo import list_models, model_info

TV_MODELS = [n for n in list_models() if model_info(n).torchvision]

# Smallest inputs that still exercise every layer (fast on 2 CPU cores); the
# slow test repeats the check at each model's canonical input size.
SMALL_INPUT = {"inception_v3": (3, 107, 107), "googlenet": (3, 64, 64)}


@pytest.mark.parametrize("name", TV_MODELS)
def test_identical_to_torchvision(name):
    r = compare_with_torchvision(name, input_shape=SMALL_INPUT.get(name, (3, 64, 64)), num_classes=10)
    assert r.archlab_params == r.reference_params
    assert r.state_dict_keys_equal
    assert r.max_abs_diff <= 1e-5


@pytest.mark.parametrize("name", TV_MODELS)
def test_param_count_equals_torchvision_reference(name):
    info = model_info(name)
    from archlab.zoo import get_model

    assert get_model(name).num_params() == info.ref_params


@pytest.mark.slow
@pytest.mark.parametrize("name", TV_MODELS)
def test_identical_to_torchvision_at_canonical_size(name):
    r = compare_with_torchvision(name)
    assert r.archlab_params == r.reference_params
    assert r.max_abs_diff <= 1e-5
