"""TinyLLaVA as a transformers Llava (a member of the vision_language family): its Phi chat template, where its
pieces sit, and a tiny random one for offline tries."""
