"""Triggers: new objects under a prefix, cron schedules, webhooks and monitor alerts start a
function invocation or a workflow execution — each firing exactly once."""
