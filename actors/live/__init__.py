"""Live market-data sources: websocket feeds turned into canonical TICK micro-batches.

One module per provider, all built on :mod:`actors.live.base` (the asyncio loop thread,
micro-batching, reconnect with backoff and jitter, silence detection, sequence gaps,
watermarks) and :mod:`actors.live.parsing` (exact numbers and times, quarantine rows):

=============  ===========================================  ==========================
kind           class                                        keys
=============  ===========================================  ==========================
``binance``    :class:`actors.live.binance.BinanceSource`    none
``coinbase``   :class:`actors.live.coinbase.CoinbaseSource`  none
``finnhub``    :class:`actors.live.finnhub.FinnhubSource`    ``FINNHUB_API_KEY``
``alpaca``     :class:`actors.live.alpaca.AlpacaSource`      ``APCA_API_KEY_ID``,
                                                             ``APCA_API_SECRET_KEY``
=============  ===========================================  ==========================

``seq`` of a tick: the exchange's trade id where the feed has one per symbol (Binance
``t``/``a``, Coinbase ``trade_id``), the book update id / feed sequence for quotes
(Binance ``u``, Coinbase ``sequence``), else a per-source counter that never resets on
reconnect (Finnhub, Alpaca). Modules are imported lazily by ``actors.load_kind``.
"""

__all__: list[str] = []
