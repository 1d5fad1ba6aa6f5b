"""One model's pruning: plan → scores → decisions → masks → weights, live and reversible.
Measures nothing."""
