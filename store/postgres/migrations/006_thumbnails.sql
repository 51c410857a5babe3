-- 005: history thumbnails (bot.Store.Thumbnail): one small encoded picture
-- per image, made once by whichever replica first needs it and read by
-- every replica. A row exists only while its image does: it goes with the
-- image (ON DELETE CASCADE), and one cannot be stored for an image that is
-- not (the foreign key).
CREATE TABLE thumbnails (
    sha256 text  PRIMARY KEY REFERENCES images (sha256) ON DELETE CASCADE,
    data   bytea NOT NULL
);
-- JPEG bytes do not compress: keep them out of line without trying.
ALTER TABLE thumbnails ALTER COLUMN data SET STORAGE EXTERNAL;
