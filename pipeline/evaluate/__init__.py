"""Budget-grid evaluation: IR metrics, cost (bytes/page, encode time), the grid run, report and Pareto plot."""
