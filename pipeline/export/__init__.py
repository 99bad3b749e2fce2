"""Budget variants: one directory per chosen budget with only the layers it runs, a head of its width and a card."""
