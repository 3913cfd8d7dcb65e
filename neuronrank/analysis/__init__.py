"""Numbers of neurons, numpy only: the statistics of a pass (NeuronStats), the NeuronRank-OLD score,
roles and rankings, and how the project states a perplexity."""
