"""The headless rules view a UI draws: Services, chains, rules, traces."""
