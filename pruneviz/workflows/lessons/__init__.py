"""The measurements behind the Learn page's lessons: each lesson's real runs on a sample model
(one module per lesson), and the published results the lessons set beside them."""

# The sample the lessons run on: one that degrades gradually under one-shot pruning.
TEACHING_SAMPLE = "sample:digits_teach"
