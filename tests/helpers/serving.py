"""What the suite's model server (tests/serve/conftest.py) serves: its alias, request limits, stored budgets and
cascade."""

ALIAS = "http"
LIMITS = {"max_rows": 4, "max_request_mb": 0.25, "max_image_pixels": 200 * 200}
SERVE = ["serve.budgets=[L2-d32-page, L2-d32-p2-bin, L2-d32-p2, L1-d16-p4]",
         "serve.cascade=[[L2-d32-page, 8], [L2-d32-p2, 5]]"]
