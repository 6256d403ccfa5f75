"""Models and checks that need no real weights: rule-made weights (:mod:`.synthetic_weights`, for
tests, benchmarks and training from scratch) and parity with the official code's golden outputs
(:mod:`.check_fixtures`)."""
