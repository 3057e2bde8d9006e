"""Reports for the people who file them: transparency figures (DSA Art. 15/24), statements of
reasons for the DSA Transparency Database (Art. 17/24(5)), and evidence packages for law
enforcement (NCMEC CyberTipline shape), with opt-in encrypted preservation. See docs/reports.md.

vigil writes these documents; it never submits anything itself.
"""
