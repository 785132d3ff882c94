"""The runtime every stage shares: one executor, one completion scheme, one atomic writer, one config
base and the funnel counts. It imports nothing else of crawlmix."""
