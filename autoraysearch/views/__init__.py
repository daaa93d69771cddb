"""What people see: Prefect artifacts, events and logs, task runs' state names, how a campaign ended, the progress plot, terminal tables, the live view.

May import autoraysearch.campaign.opening; nothing below imports it except the flows, tasks and the CLI."""
