"""proxyaug.metrics against torchcam 0.5's ``torchcam.metrics`` (a test dependency).

Both sides get the same maps: a stand-in CAM extractor hands torchcam the maps proxyaug scores,
or a recording wrapper around a real torchcam extractor hands proxyaug the CAM torchcam used.
torchcam multiplies the model input by the CAM resized bilinearly (``align_corners=False``), as
proxyaug does, and divides the drop by ``y + 1e-7`` where proxyaug divides by ``y``: the means
agree to ``atol=1e-5`` (float32 forwards of the same images; the 1e-7 changes a drop by at most
1e-7 / y relative, y >= 1 / num_classes for the predicted class). Deletion / insertion AUCs agree
to ``atol=1e-5`` where the pixel count is a multiple of ``steps`` (torchcam removes
``ceil(N / steps)`` pixels a step, proxyaug ``floor(k N / steps)`` in total; equal then) and both
rank the pixels by a stable descending sort.
"""

import contextlib
import functools

import pytest
import torch
from torch import nn

import proxyaug as pa
from proxyaug import metrics as M

torchcam_metrics = pytest.importorskip("torchcam.metrics")
ATOL = 1e-5


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with torch.no_grad():  # confident predictions, so that masking moves them
        model[-1].weight.mul_(40)
    return model


def _x(b=6, size=12):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(3))


class Given:
    """A torchcam CAM extractor that returns maps fixed in advance."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    @staticmethod
    def fuse_cams(cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


class Recording:
    """A real torchcam extractor whose fused CAM is kept for proxyaug."""

    def __init__(self, extractor):
        self.extractor, self.model, self.cams = extractor, extractor.model, []

    def __call__(self, *args, **kwargs):
        return self.extractor(*args, **kwargs)

    def fuse_cams(self, cams):
        fused = self.extractor.fuse_cams(cams)
        self.cams.append(fused.detach().clone())
        return fused

    def _hooks_off(self):
        return self.extractor._hooks_off()


@pytest.mark.parametrize("least_likely", [False, True], ids=["predicted", "least-likely class"])
def test_average_drop_increase_matches_torchcam_on_proxyaug_maps(least_likely):
    model, x = _model(), _x()
    maps = pa.attention_maps(model, x, pa.MapSpec("gradcam"))  # (B, 6, 6) in [0, 1], resized to 12 x 12 by both
    assert maps.shape == (6, 6, 6)
    # the least likely class gains confidence as a darker image flattens the softmax: increases happen
    target = model(x).argmin(dim=1) if least_likely else None
    ref = torchcam_metrics.ClassificationMetric(Given(model, maps), functools.partial(torch.softmax, dim=-1))
    ref.update(x, class_idx=None if target is None else target.tolist())
    want = ref.summary()
    drop, inc = M.average_drop_increase(model, x, maps, target=target)
    assert abs(float(drop.mean()) - want["avg_drop"]) < ATOL
    assert abs(float(inc.float().mean()) - want["conf_increase"]) < ATOL
    metric = M.AverageDropIncrease(model)
    metric.update(x[:2], maps[:2], None if target is None else target[:2])
    metric.update(x[2:], maps[2:], None if target is None else target[2:])
    got = metric.compute()
    assert abs(float(got["average_drop"]) - want["avg_drop"]) < ATOL and abs(float(got["increase"]) - want["conf_increase"]) < ATOL
    if least_likely:
        assert want["conf_increase"] > 0.5
    else:
        assert want["avg_drop"] > 0.05 and want["conf_increase"] == 0  # the maps do move the predictions


def test_average_drop_increase_matches_torchcam_with_its_own_gradcam():
    from torchcam.methods import GradCAM

    model, x = _model(), _x()
    with GradCAM(model, target_layer="3", input_shape=(3, 12, 12)) as extractor:
        rec = Recording(extractor)
        ref = torchcam_metrics.ClassificationMetric(rec, functools.partial(torch.softmax, dim=-1))
        ref.update(x)
    want = ref.summary()
    (cam,) = rec.cams
    assert cam.shape == (6, 6, 6)
    drop, inc = M.average_drop_increase(model, x, cam)
    assert abs(float(drop.mean()) - want["avg_drop"]) < ATOL
    assert abs(float(inc.float().mean()) - want["conf_increase"]) < ATOL


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
@pytest.mark.parametrize("steps", [4, 9, 144])
def test_deletion_insertion_aucs_match_torchcam(baseline, steps):
    model, x = _model(), _x()
    maps = torch.rand(6, 4, 4, generator=torch.Generator().manual_seed(4))
    maps[0, :2, :2] = 0.5  # ties
    mean = (lambda t: t.mean(dim=(2, 3), keepdim=True)) if baseline == "mean" else None
    ref = torchcam_metrics.DeletionInsertionMetric(Given(model, maps), functools.partial(torch.softmax, dim=-1),
                                                   steps=steps, baseline=mean)
    ref.update(x)
    want = ref.summary()
    deletion = M.DeletionAUC(model, steps=steps, baseline=baseline)
    insertion = M.InsertionAUC(model, steps=steps, baseline=baseline)
    deletion.update(x, maps)
    insertion.update(x, maps)
    assert abs(float(deletion.compute()) - want["deletion_auc"]) < ATOL
    assert abs(float(insertion.compute()) - want["insertion_auc"]) < ATOL
