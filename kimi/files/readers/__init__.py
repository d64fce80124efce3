"""One reader per document format, all with the signature of ``base.Reader``.

``detect`` tells the format from the content type, the file name or the first bytes; ``pdf``,
``docx``, ``html`` and ``text`` each turn a binary stream into at most ``max_chars`` of text.
"""
