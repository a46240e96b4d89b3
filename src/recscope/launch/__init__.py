"""recscope.launch: from a scorecard to an investment recommendation.

Launch criteria as code (:class:`LaunchConfig`, ``launch.toml``), the decision
(:func:`decide`: ``ship``/``iterate``/``stop`` with the numbers behind every reason), the
leadership report (:func:`render_report`), the portfolio view (:func:`portfolio`) and the
simulator hook (:func:`decide_simulated`). Metric trees and their decomposition live in
:mod:`recscope.experiments.trees`. See docs/launch.md.
"""

from recscope.launch.config import LaunchConfig, load_launch
from recscope.launch.decide import LaunchDecision, decide
from recscope.launch.inputs import Experiment, load_experiment
from recscope.launch.portfolio import Portfolio, load_decisions, portfolio
from recscope.launch.report import render_report
from recscope.launch.simulated import SIM_LAUNCH, SIM_METRICS, decide_simulated

__all__ = ["SIM_LAUNCH", "SIM_METRICS", "Experiment", "LaunchConfig", "LaunchDecision", "Portfolio", "decide",
           "decide_simulated", "load_decisions", "load_experiment", "load_launch",
           "portfolio", "render_report"]
