"""What train.py and eval.py run after parsing flags."""
