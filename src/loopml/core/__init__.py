"""Shared by every layer: errors, settings and the few conventions client and server both know."""

# the comment of a zip the SDK made from a folder (sdk.files.zip_folder): the server then names
# the folder the user gave (``folder 'imgs/'``), not the upload (``'imgs.zip'``)
FOLDER_ZIP_COMMENT = b"loopml: a zipped folder"
