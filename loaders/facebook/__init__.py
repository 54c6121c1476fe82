"""Facebook Ads (Graph / Marketing API) -> bronze_facebook_ads, with dlt; plus a local test double of the API.

Entry points: `pipeline.load_facebook` (one run of the loader), `graph_double.serve` (the test double, for
tests and the demo). See docs/facebook_loader.md.
"""
