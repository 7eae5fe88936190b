"""Each stage's params section and what a consumer requires of its cache, without its code."""
