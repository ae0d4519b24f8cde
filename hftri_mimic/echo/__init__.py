"""Echo stage (docs/SIGNALS.md, Echo): one DICOM to EchoPrime-ready cines (dicom), the view classifier
(view_classifier), and the stage's plan, shards and best clip per view (stage)."""
