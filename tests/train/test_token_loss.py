"""The validation loss's per-window means and their standard error, against written-out formulas."""

import math

import torch

from growth.data.mlm import IGNORE_INDEX
from growth.objectives.token_loss import standard_error, token_loss_sum, window_loss_means


def test_window_means_average_each_rows_targets_and_recombine_to_the_token_mean():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    labels[1, :2] = IGNORE_INDEX  # a window with fewer targets
    means = window_loss_means(logits, labels)
    for row in range(3):
        keep = labels[row] != IGNORE_INDEX
        expected = torch.nn.functional.cross_entropy(logits[row][keep], labels[row][keep])
        assert abs(means[row].item() - expected.item()) < 1e-6
    counts = (labels != IGNORE_INDEX).sum(1)
    recombined = (means * counts).sum() / counts.sum()
    assert abs(recombined.item() - (token_loss_sum(logits, labels) / counts.sum()).item()) < 1e-6


def test_standard_error_is_the_sample_std_over_root_n():
    samples = torch.tensor([2.0, 2.5, 3.5, 4.0, 1.0], dtype=torch.float64)
    se = standard_error(torch.tensor(5.0), samples.sum(), samples.square().sum())
    assert abs(se - samples.std(unbiased=True).item() / math.sqrt(5)) < 1e-12
    assert standard_error(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)) == 0.0
