import itertools

import pytest
import torch

from mner.data.labels import TWITTER_LABELS, entities
from mner.models.crf import CRF, bio_penalties, softmax_decode, softmax_marginals

LABELS = ("O", "B-A", "I-A", "B-B", "I-B")  # the layout of mner.data.labels.bio_labels


def valid(labels) -> bool:
    """A BIO sequence: every I- continues the B- or I- of its type."""
    return all(
        not label.startswith("I-") or (i > 0 and labels[i - 1][2:] == label[2:] and labels[i - 1] != "O")
        for i, label in enumerate(labels)
    )


def path_scores(crf: CRF, emissions: torch.Tensor, b: int, n: int, constrained: bool):
    """Every tag path of row ``b`` (``n`` steps) and its score; only the valid ones with
    ``constrained``."""
    start, end, transitions = crf.crf.start_transitions, crf.crf.end_transitions, crf.crf.transitions
    k = emissions.shape[-1]
    paths = list(itertools.product(range(k), repeat=n))
    if constrained:
        paths = [p for p in paths if valid([LABELS[i] for i in p])]
    scores = torch.stack(
        [
            start[p[0]]
            + end[p[-1]]
            + sum(emissions[b, t, i] for t, i in enumerate(p))
            + sum(transitions[i, j] for i, j in zip(p, p[1:]))
            for p in paths
        ]
    )
    return paths, scores


def test_marginals_and_viterbi_match_enumerating_every_path_free_and_constrained():
    torch.manual_seed(0)
    emissions = torch.randn(2, 4, len(LABELS))
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    for constrained in (False, True):
        crf = CRF(len(LABELS), constrained=constrained)
        for parameter in crf.parameters():
            torch.nn.init.normal_(parameter)
        marginals, decoded = crf.marginals(emissions, mask), crf.decode(emissions, mask)
        for b, n in enumerate([4, 2]):
            paths, scores = path_scores(crf, emissions, b, n, constrained)
            expected = torch.zeros(n, len(LABELS))
            for path, probability in zip(paths, torch.softmax(scores, dim=0)):
                for t, k in enumerate(path):
                    expected[t, k] += probability
            torch.testing.assert_close(marginals[b, :n], expected, atol=1e-5, rtol=1e-5)
            assert torch.all(marginals[b, n:] == 0)
            assert decoded[b] == list(paths[int(scores.argmax())])


def test_free_decoding_is_pytorch_crfs_viterbi():
    torch.manual_seed(1)
    crf = CRF(len(TWITTER_LABELS))
    for parameter in crf.parameters():
        torch.nn.init.normal_(parameter)
    for _ in range(50):
        emissions = torch.randn(4, 7, len(TWITTER_LABELS))
        mask = torch.arange(7)[None] < torch.randint(1, 8, (4, 1))
        assert crf.decode(emissions, mask) == crf.crf.decode(emissions, mask=mask)


def test_the_softmax_tagger_decodes_the_best_valid_sequence_of_its_word_scores():
    torch.manual_seed(2)
    emissions = torch.randn(1, 4, len(LABELS)) * 3
    mask = torch.ones(1, 4, dtype=torch.bool)
    free = softmax_decode(emissions, mask, constrained=False)[0]
    assert free == emissions[0].argmax(-1).tolist()
    log_probs = emissions.log_softmax(-1)[0]
    paths = [p for p in itertools.product(range(len(LABELS)), repeat=4) if valid([LABELS[i] for i in p])]
    best = max(paths, key=lambda p: sum(log_probs[t, k] for t, k in enumerate(p)))
    assert softmax_decode(emissions, mask, constrained=True)[0] == list(best)
    marginals = softmax_marginals(emissions, mask, constrained=True)[0]
    torch.testing.assert_close(marginals.sum(-1), torch.ones(4))
    assert torch.all(marginals[0, [2, 4]] < 1e-3)  # no I- tag first
    torch.testing.assert_close(
        softmax_marginals(emissions, mask, constrained=False)[0], emissions[0].softmax(-1)
    )


def test_constrained_decoding_never_emits_an_orphan_whatever_the_scores():
    """Many draws of wild emissions and transitions (the free decoder emits orphans on them)."""
    torch.manual_seed(3)
    crf = CRF(len(TWITTER_LABELS), constrained=True)
    for parameter in crf.parameters():
        torch.nn.init.normal_(parameter, std=5.0)
    free = CRF(len(TWITTER_LABELS))
    free.load_state_dict(crf.state_dict())
    orphans = 0
    for _ in range(100):
        emissions = torch.randn(8, 12, len(TWITTER_LABELS)) * 5
        mask = torch.arange(12)[None] < torch.randint(1, 13, (8, 1))
        for ids in crf.decode(emissions, mask):
            labels = [TWITTER_LABELS[i] for i in ids]
            assert valid(labels) and entities(labels, "strict") == entities(labels), labels
        orphans += sum(not valid([TWITTER_LABELS[i] for i in ids]) for ids in free.decode(emissions, mask))
    assert orphans > 0  # the draws do reach invalid sequences when decoding is free


def test_the_softmax_taggers_marginals_are_those_of_its_valid_sequences():
    """Constrained: ``p(y_t = k)`` summed over the valid sequences of a padded batch, each
    scored by its words' log-softmax (brute force); free: each word's softmax, zero on
    padding."""
    torch.manual_seed(6)
    emissions = torch.randn(2, 4, len(LABELS)) * 2
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    constrained = softmax_marginals(emissions, mask, constrained=True)
    for b, n in enumerate(mask.sum(1).tolist()):
        log_probs = emissions[b].log_softmax(-1)
        paths = [p for p in itertools.product(range(len(LABELS)), repeat=n) if valid([LABELS[i] for i in p])]
        weights = torch.stack([sum(log_probs[t, k] for t, k in enumerate(p)) for p in paths]).softmax(0)
        expected = torch.zeros(n, len(LABELS))
        for weight, path in zip(weights, paths):
            expected[range(n), list(path)] += weight
        torch.testing.assert_close(constrained[b, :n], expected, atol=1e-5, rtol=1e-4)
    free = softmax_marginals(emissions, mask, constrained=False)
    torch.testing.assert_close(free[0], emissions[0].softmax(-1))
    assert torch.all(free[1, 3] == 0)


def test_the_softmax_taggers_chain_is_built_on_the_scores_device():
    """On PyTorch's meta device, which refuses to mix with the CPU tensors a chain built
    on the default device would be (a GPU batch would fail the same way)."""
    emissions = torch.randn(2, 3, len(LABELS), device="meta")
    mask = torch.ones(2, 3, dtype=torch.bool, device="meta")
    marginals = softmax_marginals(emissions, mask, constrained=True)
    assert marginals.device.type == "meta" and marginals.shape == (2, 3, len(LABELS))


def test_the_grammar_needs_o_and_a_pair_per_type():
    start, moves = bio_penalties(1)  # O alone: nothing to rule out
    assert not start.any() and not moves.any()
    for size in (0, 2, 4, 8):
        with pytest.raises(
            ValueError, match=rf"^a BIO vocabulary has O and a B-/I- pair per type, not {size} tags"
        ):
            bio_penalties(size)
