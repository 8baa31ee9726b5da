"""The real-time runtime: threaded stage graph, stages, sinks, preview server, daemon."""

from edgehdr.pipeline.graph import FrameContext, Pipeline, Stage, StageStats

__all__ = ["FrameContext", "Pipeline", "Stage", "StageStats"]
