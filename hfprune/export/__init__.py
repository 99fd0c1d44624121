"""What leaves hfprune with a saved checkpoint: its model card, and the upload to the Hugging Face Hub."""
