"""The adversarial tier: one test per attack on the gates, each asserting its exit code and reason."""
