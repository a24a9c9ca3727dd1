"""The performance report: tuned kernels, tier statistics, patterns and plots."""

from autotune.report.build import REPORT_NAME, Report, ReportInputs, build_report

__all__ = ["REPORT_NAME", "Report", "ReportInputs", "build_report"]
