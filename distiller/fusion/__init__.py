"""Multi-domain fusion: one student from several domains (`distill fuse -c fusion.yaml`).

- `config`: FusionConfig (base settings, the domains, the fusion section) and its checks.
- `domains`: each domain as an ordinary run of the pipeline's stages in its own sub-run folder.
- `generators`: single-domain, cross-domain, adversarial and curated rows behind one interface.
- `integration`: per-domain teachers' answers to cross-domain questions, merged (concat | llm).
- `strategies`: multitask, sequential and integration training of the fused student.
- `retention`: base / specialist / fused per domain, DER, cross-domain accuracy, coherence.
- `run`: the fusion stages and `fuse()`, the whole run without Prefect.
"""

from distiller.fusion.config import FusionConfig, load_fusion_config

__all__ = ["FusionConfig", "load_fusion_config"]
