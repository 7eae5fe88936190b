"""The datasets: the CoNLL reader and its BIO policy, prepared sentences, statistics,
images, and the torch datasets over the caches."""
