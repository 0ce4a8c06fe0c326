"""Stage 3: the classification head, shared by the search, train-final and the registry.

Head: [top blocks of the backbone + pooling] -> [Dense(size_inner, relu) + Dropout(droprate)] ->
Dense(n_classes) logits. With blocks = 0 the features are pooled already and the head is the
dense part; with blocks > 0 they are a cut's activation maps and the head begins with a trainable
copy of the blocks above the cut (features/backbone.py), learning at block_lr x learning_rate.

  model.py  the one builder (new_head) and the optimizer of fine-tuned heads (BlockAdam)
  fit.py    fitting a head on K cached views of the training photos
  parts.py  how heads are named inside a shipped model, and how to find them again
"""
