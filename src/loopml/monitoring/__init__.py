"""Model monitoring: baselines, drift against them, quality with ground truth, reports and alerts."""
