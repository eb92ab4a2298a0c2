"""asv benchmarks: GLAD's forward and backward pass, and batched inference, on SPE instances."""
import torch

from l2obench.learned import layer_weights, weighted_layer_loss
from l2obench.registry import Registry
from l2obench_plugins.glad import GLADNetwork

REGISTRY = Registry()


def _family(n, d, M):
    return REGISTRY.problem("spe").build(d=d, M=M, n_train=n, n_val=n, n_test=n)


def _instances(n, d, M, family=None):
    family = family or _family(n, d, M)
    return family.draw(n, torch.Generator().manual_seed(0), {}, "train")


class GLADTrainingStep:
    """One forward and backward pass of the layer-weighted loss (eq. 6.5, the family's loss
    ``||out_k - Theta*||_F^2``): 64 instances of d = 30 (M = 30), K = 30 layers; the work of one
    training step."""

    params = ["z", "theta"]
    param_names = ["output"]
    timeout = 300

    def setup(self, output):
        self.family = _family(64, 30, 30)
        data = _instances(64, 30, 30, self.family)
        self.S, self.target = data.observed["S"], data.target
        torch.manual_seed(0)
        self.network = GLADNetwork(n_layers=30, output=output)
        self.weights = layer_weights(30, 0.9, self.S)

    def _loss(self):
        return weighted_layer_loss(self.family, self.network(self.S), self.target, self.weights)

    def time_forward_backward(self, output):
        self.network.zero_grad(set_to_none=True)
        self._loss().backward()

    def peakmem_forward_backward(self, output):
        self._loss().backward()


class GLADInference:
    """A batched inference pass (no gradients, last layer only) over 1000 instances of d = 30, K = 30."""

    timeout = 300

    def setup(self):
        self.S = _instances(1000, 30, 30).observed["S"]
        torch.manual_seed(0)
        self.network = GLADNetwork(n_layers=30).eval()

    def time_inference(self):
        with torch.no_grad():
            self.network(self.S, keep_all=False)
