import itertools

import torch

from mner.models.crf import CRF


def test_marginals_match_enumerating_every_path():
    torch.manual_seed(0)
    crf = CRF(3)
    for parameter in crf.parameters():
        torch.nn.init.normal_(parameter)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    marginals = crf.marginals(emissions, mask)
    start, end, transitions = crf.crf.start_transitions, crf.crf.end_transitions, crf.crf.transitions
    for b, n in enumerate([4, 2]):
        paths = list(itertools.product(range(3), repeat=n))
        scores = torch.stack(
            [
                start[p[0]]
                + end[p[-1]]
                + sum(emissions[b, t, k] for t, k in enumerate(p))
                + sum(transitions[i, j] for i, j in zip(p, p[1:]))
                for p in paths
            ]
        )
        expected = torch.zeros(n, 3)
        for path, probability in zip(paths, torch.softmax(scores, dim=0)):
            for t, k in enumerate(path):
                expected[t, k] += probability
        torch.testing.assert_close(marginals[b, :n], expected, atol=1e-5, rtol=1e-5)
        assert torch.all(marginals[b, n:] == 0)
