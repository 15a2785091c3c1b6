"""The loop-quality benchmark: River's drifting streams served by the real platform, scored
against River's adaptive random forest and a static model on the same samples."""
