"""What a run uses when nothing is named; kept free of heavy imports, so the CLI starts quickly."""

DEFAULT_TEACHER = "torchvision:mobilenet_v2"
# The ImageNet MobileNetV2 as the student, at 64 px: 49 MFLOPs, 12x cheaper than the 224 px teacher (599).
DEFAULT_STUDENT = "torchvision:mobilenet_v2"
DEFAULT_STUDENT_IMAGE_SIZE = 64
# The main job: the teacher probes, the ImageNet student as it is, fine-tuned, with per-task KD,
# and the same student distilled with TCS on the base split.
DEFAULT_METHODS = ("ncm", "simpleshot", "logreg", "student-ncm", "finetune", "kd", "student-ncm@tcs")
# The default on a features file, the digits demo or the pixels "teacher": no images, or no teacher.
PROBE_METHODS = ("ncm", "simpleshot", "logreg")
