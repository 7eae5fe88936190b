"""The datasets: the CoNLL reader and its BIO policy, labels, prepared sentences, statistics."""
