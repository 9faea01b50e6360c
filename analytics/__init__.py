"""Analytics: sentiment scoring, rolling state, the rules engine and transcript queries."""
