import pytest

from tcs_fewshot.runs.method_setup import deployed_cost
from tcs_fewshot.models.students import build_student
from tcs_fewshot.models.teachers import load_teacher


def test_deployed_cost_of_a_tiny_student_counts_its_convolutions_by_hand():
    student = build_student("conv4-16", "scratch", None, 32)
    cost = deployed_cost("student", None, student, None)
    # four 3x3 convs (3->16, then 16->16), each followed by a 2x2 pool: 32, 16, 8, 4 px
    by_hand = 2 * 9 * (3 * 16 * 32**2 + 16 * 16 * (16**2 + 8**2 + 4**2))
    assert cost == {"network": "student", "flops_per_image": by_hand, "image_size": 32,
                    "parameters": sum(p.numel() for p in student.model.parameters())}
    assert deployed_cost("pixels", None, None, None) == {"network": "pixels", "flops_per_image": 0, "parameters": 0,
                                                          "image_size": 16}
    assert deployed_cost("teacher", None, None, None)["flops_per_image"] is None, "a --features run has no model"


def test_deployed_cost_of_the_teacher_uses_its_crop_size():
    cost = deployed_cost("teacher", load_teacher("torchvision:mobilenet_v2"), None, None)
    assert cost["image_size"] == 224
    assert cost["flops_per_image"] == pytest.approx(600e6, rel=0.02)  # MobileNetV2's published ~300M multiply-adds
    assert cost["parameters"] == pytest.approx(2.22e6, rel=0.01)  # 3.5M less the 1.28M-parameter classifier
