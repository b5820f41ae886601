-- What a trial started from when its config sets model.init_from (#19): a
-- JSON object with the source as given, the file read, the tensors loaded,
-- those left to model.init (with why) and those of the file not used.
-- NULL: the trial was not pretrained (or was recorded before this column).
ALTER TABLE trials ADD COLUMN init_json TEXT;
