"""Labeled sequence translation (LST): training data with slot markers around aligned phrases (`prepare`),
fine-tuning a many-to-many translation model on it (`finetune`), and measuring how well a translation engine
keeps markers (`marker_eval`)."""
