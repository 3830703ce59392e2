"""Teacher VLMs behind one interface: `oracle` (the synthetic world's truth, imperfect by documented
parameters), `openai` (any OpenAI-compatible endpoint), `hf` (a local transformers VLM)."""

from editr1.teachers.base import Teacher, TeacherUsage

__all__ = ["Teacher", "TeacherUsage"]
