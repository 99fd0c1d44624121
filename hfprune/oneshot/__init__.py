"""One-shot commands on a checkpoint: prune (structured / unstructured), convert, model cards, push."""
