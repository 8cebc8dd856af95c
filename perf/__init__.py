"""Level 3, performance model: compressed host programs, transaction-level timing, energy, reports."""
